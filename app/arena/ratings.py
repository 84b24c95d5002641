"""Arena rating maths: Bradley–Terry fit, clustered bootstrap, leaderboard and vote diagnostics.

Pure numpy/scipy/pandas so it can be tested and benchmarked without the database or the UI.
Ratings live on an Elo-like scale: ``init_rating + scale * log_base(odds)``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

# scipy and pandas are imported where they are used: together they cost most of a second of
# the app's start-up.

CHOICE_SCORE = {"a": 1.0, "b": 0.0, "tie": 0.5}


@dataclass
class VoteTable:
    """One row per vote; model columns hold indices into ``names``."""

    model_a: np.ndarray
    model_b: np.ndarray
    outcome: np.ndarray  # 1.0 = A won, 0.0 = B won, 0.5 = tie
    prompt_id: np.ndarray  # votes sharing a prompt are resampled together
    names: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.model_a = np.asarray(self.model_a, dtype=np.int64).reshape(-1)
        self.model_b = np.asarray(self.model_b, dtype=np.int64).reshape(-1)
        self.outcome = np.asarray(self.outcome, dtype=np.float64).reshape(-1)
        self.prompt_id = np.asarray(self.prompt_id, dtype=np.int64).reshape(-1)
        self.names = [str(n) for n in self.names]
        n = len(self.model_a)
        if not (len(self.model_b) == len(self.outcome) == len(self.prompt_id) == n):
            raise ValueError("model_a, model_b, outcome and prompt_id must have the same length")
        if len(set(self.names)) != len(self.names):
            raise ValueError("model names must be unique")
        m = len(self.names)
        if n and (min(self.model_a.min(), self.model_b.min()) < 0
                  or max(self.model_a.max(), self.model_b.max()) >= m):
            raise ValueError(f"model indices must lie in 0..{m - 1} (one per name)")
        if np.any(self.model_a == self.model_b):
            raise ValueError("a vote needs two different models")
        if not np.all((self.outcome >= 0.0) & (self.outcome <= 1.0)):
            raise ValueError("outcome must be in [0, 1] (1 = A won, 0 = B won, 0.5 = tie)")

    def __len__(self) -> int:
        return len(self.model_a)

    @property
    def n_models(self) -> int:
        return len(self.names)

    def votes_per_model(self) -> np.ndarray:
        m = self.n_models
        return np.bincount(self.model_a, minlength=m) + np.bincount(self.model_b, minlength=m)

    @classmethod
    def from_records(
        cls,
        records: Iterable[Mapping[str, Any]],
        both_bad: Literal["tie", "drop"] = "tie",
        names: Sequence[str] | None = None,
    ) -> VoteTable:
        """Build from dicts ``{"a", "b", "choice", "prompt"}``.

        ``names`` fixes the model order (and may list models without votes); otherwise models are
        numbered in order of first appearance. A record without a prompt forms its own cluster.
        """
        if both_bad not in ("tie", "drop"):
            raise ValueError(f"both_bad must be 'tie' or 'drop', got {both_bad!r}")
        index: dict[str, int] = {}
        fixed = names is not None
        for name in names or ():
            index.setdefault(str(name), len(index))
        prompts: dict[Any, int] = {}
        a_idx: list[int] = []
        b_idx: list[int] = []
        out: list[float] = []
        pid: list[int] = []
        for k, rec in enumerate(records):
            choice = rec["choice"]
            if choice == "both_bad":
                if both_bad == "drop":
                    continue
                score = 0.5
            elif choice in CHOICE_SCORE:
                score = CHOICE_SCORE[choice]
            else:
                raise ValueError(f"record {k}: choice must be a, b, tie or both_bad, got {choice!r}")
            pair = []
            for side in ("a", "b"):
                name = str(rec[side])
                if name not in index:
                    if fixed:
                        raise ValueError(f"record {k}: model {name!r} is not in names")
                    index[name] = len(index)
                pair.append(index[name])
            prompt = rec.get("prompt")
            # Distinct key per prompt-less record so it never merges with a real prompt's cluster.
            key = ("__record__", k) if prompt is None else ("prompt", prompt)
            a_idx.append(pair[0])
            b_idx.append(pair[1])
            out.append(score)
            pid.append(prompts.setdefault(key, len(prompts)))
        return cls(
            model_a=np.array(a_idx, dtype=np.int64),
            model_b=np.array(b_idx, dtype=np.int64),
            outcome=np.array(out, dtype=np.float64),
            prompt_id=np.array(pid, dtype=np.int64),
            names=list(index),
        )


# ---------------------------------------------------------------------------------------------
# Bradley–Terry


@dataclass
class _Pairs:
    """Votes aggregated per unordered pair (i < j); ``w`` is i's score (wins + ties/2)."""

    i: np.ndarray
    j: np.ndarray
    w: np.ndarray
    n: np.ndarray
    vote_pair: np.ndarray  # pair index of every vote, for the bootstrap's cluster×pair matrix
    vote_score: np.ndarray


def _aggregate(table: VoteTable) -> _Pairs:
    m = max(table.n_models, 1)
    lo = np.minimum(table.model_a, table.model_b)
    hi = np.maximum(table.model_a, table.model_b)
    # Position is irrelevant to BT, so fold (a, b) and (b, a) into one pair.
    score_lo = np.where(table.model_a == lo, table.outcome, 1.0 - table.outcome)
    keys, inv = np.unique(lo * m + hi, return_inverse=True)
    inv = inv.reshape(-1)
    n = np.bincount(inv, minlength=len(keys)).astype(np.float64)
    w = np.bincount(inv, weights=score_lo, minlength=len(keys))
    return _Pairs(i=keys // m, j=keys % m, w=w, n=n, vote_pair=inv, vote_score=score_lo)


def _fit_theta(
    i: np.ndarray, j: np.ndarray, w: np.ndarray, n: np.ndarray, m: int, l2: float,
    x0: np.ndarray | None = None,
) -> np.ndarray:
    """Natural-log strengths, mean zero over models that have votes; others are 0.

    Minimises the per-vote logistic loss (target = score share) + ``l2 * |x|²``. The problem is
    convex and tiny (M parameters), so damped Newton with the exact Hessian converges in a handful
    of steps; L-BFGS is the fallback should Newton stall.
    """
    if l2 < 0:
        raise ValueError("l2 must be non-negative")
    theta = np.zeros(m)
    has = n > 0
    total = float(n[has].sum())
    if total <= 0:
        return theta
    i, j, w, n = i[has], j[has], w[has], n[has]
    active = np.zeros(m, dtype=bool)
    active[i] = True
    active[j] = True
    lose = n - w
    inv_total = 1.0 / total  # per-vote loss keeps gradients O(1) whatever the vote count

    def fun(x: np.ndarray) -> float:
        d = x[i] - x[j]
        return float(w @ np.logaddexp(0.0, -d) + lose @ np.logaddexp(0.0, d)) * inv_total + l2 * float(x @ x)

    def grad_hess(x: np.ndarray, hessian: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
        p = np.exp(-np.logaddexp(0.0, -(x[i] - x[j])))  # the logistic function, overflow-free
        g_d = (n * p - w) * inv_total
        grad = np.bincount(i, g_d, minlength=m) - np.bincount(j, g_d, minlength=m) + 2.0 * l2 * x
        if not hessian:
            return grad, None
        c = n * p * (1.0 - p) * inv_total
        # Weighted graph Laplacian of the pairs; pairs are unique so plain fancy assignment works.
        h = np.zeros((m, m))
        h[i, j] = -c
        h[j, i] = -c
        h[np.diag_indices(m)] = np.bincount(i, c, minlength=m) + np.bincount(j, c, minlength=m)
        h[np.diag_indices(m)] += 2.0 * l2 + 1e-12  # tiny ridge: solvable even with l2 = 0
        return grad, h

    x = np.zeros(m) if x0 is None else np.asarray(x0, dtype=np.float64).copy()
    x[~np.isfinite(x)] = 0.0
    f = fun(x)
    converged = False
    for _ in range(100):
        g, h = grad_hess(x)
        step = np.linalg.solve(h, -g)
        decrement = -float(g @ step)  # Newton decrement²: predicted loss reduction ×2
        if decrement < 1e-14:
            converged = True
            break
        t = 1.0
        while t > 1e-10:  # Armijo backtracking
            x_new = x + t * step
            f_new = fun(x_new)
            if f_new <= f - 0.25 * t * decrement:
                break
            t *= 0.5
        else:
            break  # no descent left at float precision: let L-BFGS polish from here
        x, f = x_new, f_new
    if not converged:
        from scipy import optimize

        res = optimize.minimize(
            lambda z: (fun(z), grad_hess(z, hessian=False)[0]), x, jac=True, method="L-BFGS-B",
            options={"maxiter": 5000, "gtol": 1e-10, "ftol": 1e-14},
        )
        x = res.x
    # The likelihood only sees differences; pin the free shift so the voted models average zero.
    theta[active] = x[active] - x[active].mean()
    return theta


def _to_rating(theta: np.ndarray, scale: float, base: float, init_rating: float) -> np.ndarray:
    if not (base > 0 and base != 1 and scale > 0):
        raise ValueError("need scale > 0 and base > 0, base != 1")
    return init_rating + scale * theta / math.log(base)


def fit_bradley_terry(
    table: VoteTable,
    scale: float = 400,
    base: float = 10,
    init_rating: float = 1000,
    l2: float = 1e-6,
) -> np.ndarray:
    """Maximum-likelihood Bradley–Terry ratings; a tie counts as half a win for each side.

    ``l2`` (on natural-log strengths, per vote) keeps unbeaten models and disconnected groups finite.
    Models with no votes get ``init_rating``; the others average ``init_rating``.
    """
    pairs = _aggregate(table)
    theta = _fit_theta(pairs.i, pairs.j, pairs.w, pairs.n, table.n_models, l2)
    return _to_rating(theta, scale, base, init_rating)


def _bootstrap_theta(
    table: VoteTable, pairs: _Pairs, theta_hat: np.ndarray, rounds: int, seed: int, l2: float
) -> np.ndarray:
    """(rounds, M) natural-log strengths; NaN where a model drew no votes in that resample."""
    m = table.n_models
    samples = np.full((rounds, m), np.nan)
    if len(table) == 0 or rounds <= 0:
        return samples
    from scipy import sparse

    _, cluster = np.unique(table.prompt_id, return_inverse=True)
    cluster = cluster.reshape(-1)
    c, p = int(cluster.max()) + 1, len(pairs.n)
    # One sparse (2P × C) matrix gives both pair counts and pair scores for any cluster weighting.
    rows = np.concatenate([pairs.vote_pair, pairs.vote_pair + p])
    cols = np.concatenate([cluster, cluster])
    vals = np.concatenate([np.ones(len(cluster)), pairs.vote_score])
    agg = sparse.csr_matrix((vals, (rows, cols)), shape=(2 * p, c))
    rng = np.random.default_rng(seed)
    for r in range(rounds):
        mult = np.bincount(rng.integers(0, c, size=c), minlength=c).astype(np.float64)
        nw = agg @ mult
        n, w = nw[:p], nw[p:]
        theta = _fit_theta(pairs.i, pairs.j, w, n, m, l2, x0=theta_hat)
        voted = np.zeros(m, dtype=bool)
        voted[pairs.i[n > 0]] = True
        voted[pairs.j[n > 0]] = True
        samples[r, voted] = theta[voted]
    return samples


def _percentiles(samples: np.ndarray, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    m = samples.shape[1]
    lower, upper = np.full(m, np.nan), np.full(m, np.nan)
    for k in range(m):
        col = samples[:, k]
        col = col[np.isfinite(col)]
        if len(col):
            lower[k], upper[k] = np.percentile(col, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return lower, upper


def _fit_with_bootstrap(
    table: VoteTable, rounds: int, seed: int, alpha: float, scale: float, base: float, init_rating: float,
    l2: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Point ratings, percentile bounds and bootstrap samples, all on the rating scale."""
    if not 0 < alpha < 1:
        raise ValueError("alpha must be in (0, 1)")
    pairs = _aggregate(table)
    theta_hat = _fit_theta(pairs.i, pairs.j, pairs.w, pairs.n, table.n_models, l2)
    boot = _bootstrap_theta(table, pairs, theta_hat, rounds, seed, l2)
    samples = _to_rating(boot, scale, base, init_rating)
    lower, upper = _percentiles(samples, alpha)
    return _to_rating(theta_hat, scale, base, init_rating), lower, upper, samples


def bootstrap_intervals(
    table: VoteTable,
    rounds: int = 200,
    seed: int = 0,
    alpha: float = 0.05,
    *,
    scale: float = 400,
    base: float = 10,
    init_rating: float = 1000,
    l2: float = 1e-6,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Percentile intervals from a bootstrap over prompt clusters (not single votes).

    Returns ``(lower, upper, samples)`` with ``samples`` of shape (rounds, M) on the rating scale.
    A model without votes in a resample gets NaN there; with no votes at all its bounds are NaN.
    """
    _, lower, upper, samples = _fit_with_bootstrap(table, rounds, seed, alpha, scale, base, init_rating, l2)
    return lower, upper, samples


def rank_from_intervals(lower: np.ndarray, upper: np.ndarray) -> np.ndarray:
    """1 + the number of models whose lower bound beats this model's upper bound."""
    lower, upper = np.asarray(lower, dtype=float), np.asarray(upper, dtype=float)
    return 1 + (lower[None, :] > upper[:, None]).sum(axis=1)


def leaderboard(
    table: VoteTable,
    rounds: int = 200,
    seed: int = 0,
    *,
    alpha: float = 0.05,
    scale: float = 400,
    base: float = 10,
    init_rating: float = 1000,
    l2: float = 1e-6,
) -> pd.DataFrame:
    """Columns model, rating, lower, upper, votes, rank; sorted by rating, best first.

    Models with overlapping intervals share a rank. Models without votes have NaN bounds and no
    rank (pandas NA) and are listed last.
    """
    import pandas as pd

    rating, lower, upper, _ = _fit_with_bootstrap(table, rounds, seed, alpha, scale, base, init_rating, l2)
    votes = table.votes_per_model()
    rank = pd.array(rank_from_intervals(lower, upper), dtype="Int64")
    rank[votes == 0] = pd.NA
    df = pd.DataFrame({
        "model": table.names,
        "rating": rating,
        "lower": lower,
        "upper": upper,
        "votes": votes,
        "rank": rank,
    })
    df["_unvoted"] = votes == 0
    df = df.sort_values(["_unvoted", "rating", "model"], ascending=[True, False, True], kind="stable")
    return df.drop(columns="_unvoted").reset_index(drop=True)


# ---------------------------------------------------------------------------------------------
# Head-to-head tables and biases


def battle_count_matrix(table: VoteTable) -> pd.DataFrame:
    """Votes between each pair of models regardless of side; symmetric, zero diagonal."""
    import pandas as pd

    m = table.n_models
    counts = np.zeros((m, m), dtype=np.int64)
    np.add.at(counts, (table.model_a, table.model_b), 1)
    counts = counts + counts.T
    return pd.DataFrame(counts, index=table.names, columns=table.names)


def win_rate_matrix(table: VoteTable) -> pd.DataFrame:
    """Row model's score rate against the column model (ties as half); NaN where they never met."""
    import pandas as pd

    m = table.n_models
    score = np.zeros((m, m))
    np.add.at(score, (table.model_a, table.model_b), table.outcome)
    np.add.at(score, (table.model_b, table.model_a), 1.0 - table.outcome)
    counts = battle_count_matrix(table).to_numpy().astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        rate = np.where(counts > 0, score / counts, np.nan)
    return pd.DataFrame(rate, index=table.names, columns=table.names)


def _binomial_summary(wins: int, n: int, key: str) -> dict[str, float | int]:
    if not n:
        return {key: float("nan"), "n": 0, "p_value": float("nan")}
    from scipy import stats

    p_value = float(stats.binomtest(wins, n, 0.5).pvalue)
    return {key: wins / n, "n": n, "p_value": p_value}


def position_bias(table: VoteTable) -> dict[str, float | int]:
    """Share of decisive votes won by the left (A) side, with a two-sided binomial p-value vs 0.5."""
    decisive = (table.outcome == 1.0) | (table.outcome == 0.0)
    return _binomial_summary(int((table.outcome == 1.0).sum()), int(decisive.sum()), "left_win_rate")


def length_bias(lengths_a: Sequence[float], lengths_b: Sequence[float], outcome: Sequence[float]) -> dict:
    """Win rate of the longer answer among decisive votes whose answers differ in length."""
    la = np.asarray(lengths_a, dtype=float)
    lb = np.asarray(lengths_b, dtype=float)
    out = np.asarray(outcome, dtype=float)
    if not (la.shape == lb.shape == out.shape):
        raise ValueError("lengths_a, lengths_b and outcome must have the same length")
    use = ((out == 1.0) | (out == 0.0)) & (la != lb)
    longer_won = (la > lb) == (out == 1.0)
    return _binomial_summary(int((longer_won & use).sum()), int(use.sum()), "longer_win_rate")


# ---------------------------------------------------------------------------------------------
# Planning: how many votes, and which pair next


def votes_needed(
    rating_a: float, rating_b: float, scale: float = 400, base: float = 10, z: float = 1.96
) -> int | None:
    """Head-to-head votes for a z-test to tell two models apart, from their predicted win rate.

    n ≈ z² p(1-p) / (p - 0.5)²; None when the gap is zero (or not finite): no n suffices.
    """
    gap = float(rating_a) - float(rating_b)
    if not math.isfinite(gap) or gap == 0:
        return None
    # Work with |gap| so the power only ever underflows (to p = 1), never overflows.
    p = 1.0 / (1.0 + base ** (-abs(gap) / scale))
    if p == 0.5:  # gap below float resolution
        return None
    return max(1, math.ceil(z * z * p * (1.0 - p) / (p - 0.5) ** 2))


def sampling_weights(
    names_or_count: Sequence[str] | int,
    pair_counts: Mapping[tuple[int, int], float] | np.ndarray | pd.DataFrame | None,
    interval_widths: Sequence[float] | np.ndarray | None = None,
    eps: float = 1e-3,
) -> dict[tuple[int, int], float]:
    """Probability of showing each unordered pair (i < j) next; sums to 1, all positive.

    weight ∝ (u_i + u_j + eps) / sqrt(1 + n_ij) where u are the interval widths scaled to max 1,
    so thinly sampled pairs and uncertain models come up more. ``pair_counts`` may be a mapping
    (either order, summed) or an M×M matrix such as :func:`battle_count_matrix`.
    """
    m = names_or_count if isinstance(names_or_count, int) else len(names_or_count)
    if m < 2:
        raise ValueError(f"pair sampling needs at least 2 models, got {m}")
    counts = np.zeros((m, m))
    if isinstance(pair_counts, Mapping):
        for (i, j), v in pair_counts.items():
            if not (0 <= i < m and 0 <= j < m):
                raise ValueError(f"pair ({i}, {j}) is outside 0..{m - 1}")
            counts[i, j] += float(v)
    elif pair_counts is not None:
        arr = np.asarray(pair_counts, dtype=float)
        if arr.shape != (m, m):
            raise ValueError(f"pair_counts matrix must be {m}×{m}, got {arr.shape}")
        # A symmetric matrix already lists each battle twice; only the upper triangle is read.
        counts = np.triu(np.nan_to_num(arr), 1)
    counts = counts + counts.T
    if np.any(counts < 0):
        raise ValueError("pair counts must be non-negative")

    if interval_widths is None:
        u = np.ones(m)
    else:
        u = np.asarray(interval_widths, dtype=float).reshape(-1)
        if len(u) != m:
            raise ValueError(f"interval_widths must have {m} entries, got {len(u)}")
        finite = np.isfinite(u) & (u >= 0)
        top = u[finite].max() if finite.any() and u[finite].max() > 0 else 1.0
        # Unknown width (e.g. a model with no votes) is treated as maximally uncertain.
        u = np.where(finite, u, top) / top

    iu, ju = np.triu_indices(m, 1)
    raw = (u[iu] + u[ju] + eps) / np.sqrt(1.0 + counts[iu, ju])
    prob = raw / raw.sum()
    return {(int(a), int(b)): float(v) for a, b, v in zip(iu, ju, prob, strict=True)}
