"""Rating maths checked against votes simulated from known strengths."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from app.arena.ratings import (
    VoteTable,
    battle_count_matrix,
    bootstrap_intervals,
    fit_bradley_terry,
    leaderboard,
    length_bias,
    position_bias,
    rank_from_intervals,
    sampling_weights,
    votes_needed,
    win_rate_matrix,
)


def simulate(
    true: np.ndarray,
    n_votes: int,
    seed: int,
    n_prompts: int | None = None,
    left_bonus: float = 0.0,
) -> VoteTable:
    """Votes from Elo-scale strengths (base 10, scale 400).

    Ties come with probability p(1-p) and the win probability is lowered by half of that, so the
    expected score of A is still the Bradley–Terry p: the half-win model is then correctly specified.
    ``left_bonus`` (Elo) favours whoever sits on the A side.
    """
    rng = np.random.default_rng(seed)
    m = len(true)
    a = rng.integers(0, m, n_votes)
    b = (a + rng.integers(1, m, n_votes)) % m
    p = 1.0 / (1.0 + 10 ** ((true[b] - true[a] - left_bonus) / 400))
    tie = p * (1 - p)
    u = rng.random(n_votes)
    outcome = np.where(u < p - tie / 2, 1.0, np.where(u < p + tie / 2, 0.5, 0.0))
    prompts = rng.integers(0, n_prompts or n_votes, n_votes)
    return VoteTable(model_a=a, model_b=b, outcome=outcome, prompt_id=prompts,
                     names=[f"m{k}" for k in range(m)])


# Six models 200 apart, deliberately not in index order.
TRUE6 = np.array([900.0, 1500.0, 500.0, 1100.0, 1300.0, 700.0])


@pytest.fixture(scope="module")
def six() -> VoteTable:
    return simulate(TRUE6, 20_000, seed=7, n_prompts=6_000)


def anchored(true: np.ndarray) -> np.ndarray:
    return true - true.mean() + 1000.0


# ---------------------------------------------------------------- Bradley–Terry point estimates


def test_fit_recovers_true_order(six: VoteTable) -> None:
    fitted = fit_bradley_terry(six)
    assert list(np.argsort(-fitted)) == list(np.argsort(-TRUE6))


def test_fit_recovers_rating_differences(six: VoteTable) -> None:
    fitted = fit_bradley_terry(six)
    assert fitted.mean() == pytest.approx(1000.0)
    err = (fitted[:, None] - fitted[None, :]) - (TRUE6[:, None] - TRUE6[None, :])
    assert np.abs(err).max() < 30.0  # observed SE of a difference is ~8 Elo


def test_two_model_closed_form() -> None:
    # 75 % score share means odds 3:1, i.e. a gap of 400·log10(3) Elo; ties count half.
    wins = VoteTable([0] * 75 + [1] * 25, [1] * 75 + [0] * 25, [1.0] * 100, np.arange(100), ["x", "y"])
    ties = VoteTable([0] * 100, [1] * 100, [1.0] * 50 + [0.5] * 50, np.arange(100), ["x", "y"])
    gap = 400 * math.log10(3)
    for table in (wins, ties):
        r = fit_bradley_terry(table)
        assert r[0] - r[1] == pytest.approx(gap, abs=0.05)
        assert r.mean() == pytest.approx(1000.0)


def test_scale_base_and_init_are_plain_unit_changes(six: VoteTable) -> None:
    elo = fit_bradley_terry(six)
    nat = fit_bradley_terry(six, scale=1.0, base=math.e, init_rating=0.0)
    np.testing.assert_allclose(nat, (elo - 1000.0) * math.log(10) / 400, atol=1e-4)


def test_unvoted_and_disconnected_models_stay_finite() -> None:
    # {0,1} and {2,3} never meet, 3 always loses, 4 never plays.
    a = np.array([0, 0, 0, 2, 2, 2])
    b = np.array([1, 1, 1, 3, 3, 3])
    out = np.array([1.0, 1.0, 0.0, 1.0, 1.0, 1.0])
    r = fit_bradley_terry(VoteTable(a, b, out, np.arange(6), list("abcde")))
    assert np.all(np.isfinite(r))
    assert r[4] == 1000.0
    assert r.mean() == pytest.approx(1000.0)
    assert r[0] > r[1] and r[2] > r[3]
    assert r[2] - r[3] > r[0] - r[1]  # an unbeaten record is a bigger gap than 2 of 3


def test_empty_table() -> None:
    empty = VoteTable([], [], [], [], ["x", "y"])
    np.testing.assert_array_equal(fit_bradley_terry(empty), [1000.0, 1000.0])
    board = leaderboard(empty, rounds=5)
    assert board["votes"].tolist() == [0, 0]
    assert board["rank"].isna().all()


# ---------------------------------------------------------------- bootstrap and leaderboard


def test_bootstrap_intervals_cover_truth(six: VoteTable) -> None:
    lower, upper, samples = bootstrap_intervals(six, rounds=200, seed=1)
    assert samples.shape == (200, 6)
    truth = anchored(TRUE6)
    covered = (lower <= truth) & (truth <= upper)
    assert covered.sum() >= 5
    fitted = fit_bradley_terry(six)
    assert np.all(lower < fitted) and np.all(fitted < upper)
    assert np.all(upper - lower < 60)  # ~6.7k votes per model: intervals must be tight


def test_bootstrap_resamples_prompt_clusters_not_votes() -> None:
    # Copy every vote 5× under its own prompt: the evidence is unchanged, so a clustered
    # bootstrap keeps its width, whereas giving each copy a fresh prompt narrows it by ~√5.
    base = simulate(np.array([1000.0, 1100.0, 1200.0]), 2_000, seed=3)
    rep = np.repeat(np.arange(len(base)), 5)
    copies = VoteTable(
        base.model_a[rep], base.model_b[rep], base.outcome[rep], base.prompt_id[rep], base.names
    )
    split = VoteTable(copies.model_a, copies.model_b, copies.outcome, np.arange(len(rep)), base.names)

    def width(t: VoteTable) -> float:
        lo, hi, _ = bootstrap_intervals(t, rounds=300, seed=2)
        return float(np.mean(hi - lo))

    w_base, w_copies, w_split = width(base), width(copies), width(split)
    assert 0.8 < w_copies / w_base < 1.25
    assert w_split / w_base < 0.6


def test_bootstrap_is_seeded(six: VoteTable) -> None:
    a = bootstrap_intervals(six, rounds=20, seed=5)[2]
    b = bootstrap_intervals(six, rounds=20, seed=5)[2]
    c = bootstrap_intervals(six, rounds=20, seed=6)[2]
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_rank_rule_by_hand() -> None:
    # x [10,20] and y [15,25] overlap; z [0,5] lies below both.
    ranks = rank_from_intervals(np.array([10.0, 15.0, 0.0]), np.array([20.0, 25.0, 5.0]))
    assert ranks.tolist() == [1, 1, 3]


def test_leaderboard_shares_ranks_for_equal_strength() -> None:
    true = np.array([1200.0, 1400.0, 800.0, 1200.0, 1000.0])
    table = simulate(true, 20_000, seed=11, n_prompts=5_000)
    board = leaderboard(table, rounds=200, seed=0)
    assert list(board.columns) == ["model", "rating", "lower", "upper", "votes", "rank"]
    assert board["rating"].is_monotonic_decreasing
    rank = dict(zip(board["model"], board["rank"], strict=True))
    assert rank["m0"] == rank["m3"] == 2  # equal strength: overlapping intervals
    assert rank["m1"] == 1
    assert rank["m4"] == 4
    assert rank["m2"] == 5
    counts = {n: int(((table.model_a == k) | (table.model_b == k)).sum()) for k, n in enumerate(table.names)}
    assert dict(zip(board["model"], board["votes"], strict=True)) == counts


def test_leaderboard_lists_unvoted_models_last() -> None:
    table = VoteTable([0, 0, 1], [1, 1, 0], [1.0, 0.5, 0.0], [0, 1, 2], ["x", "y", "ghost"])
    board = leaderboard(table, rounds=50)
    assert board["model"].iloc[-1] == "ghost"
    ghost = board.iloc[-1]
    assert ghost["votes"] == 0 and pd.isna(ghost["rank"]) and math.isnan(ghost["lower"])
    assert board["rank"].iloc[:2].notna().all()


# ---------------------------------------------------------------- head-to-head tables and biases


def test_win_rate_matrix_is_complementary(six: VoteTable) -> None:
    w = win_rate_matrix(six).to_numpy()
    off = ~np.eye(6, dtype=bool)
    assert not np.isnan(w[off]).any()
    np.testing.assert_allclose((w + w.T)[off], 1.0)
    assert np.isnan(np.diag(w)).all()
    counts = battle_count_matrix(six).to_numpy()
    assert (counts == counts.T).all() and counts.sum() == 2 * len(six)


def test_win_rate_matrix_small_case_by_hand() -> None:
    # x beats y twice (once from each side) and ties once; z never plays.
    table = VoteTable([0, 1, 0], [1, 0, 1], [1.0, 0.0, 0.5], [0, 1, 2], ["x", "y", "z"])
    w = win_rate_matrix(table)
    assert w.loc["x", "y"] == pytest.approx(2.5 / 3)
    assert w.loc["y", "x"] == pytest.approx(0.5 / 3)
    assert np.isnan(w.loc["x", "z"]) and np.isnan(w.loc["z", "y"])
    assert battle_count_matrix(table).loc["y", "x"] == 3


def test_position_bias_detects_left_side_preference() -> None:
    equal = np.full(4, 1000.0)
    biased = position_bias(simulate(equal, 10_000, seed=4, left_bonus=60.0))
    fair = position_bias(simulate(equal, 10_000, seed=4))
    # 60 Elo is a 58.5 % expected score; ties are excluded from the decisive share.
    assert biased["left_win_rate"] > 0.56 and biased["p_value"] < 1e-6
    assert abs(fair["left_win_rate"] - 0.5) < 0.02 and fair["p_value"] > 0.001
    assert 0 < biased["n"] < 10_000


def test_length_bias() -> None:
    rng = np.random.default_rng(9)
    n = 5_000
    la = rng.integers(50, 500, n)
    lb = rng.integers(50, 500, n)
    longer_wins = rng.random(n) < 0.65
    outcome = np.where((la > lb) == longer_wins, 1.0, 0.0)
    outcome[:500] = 0.5  # ties never count
    lb[500:700] = la[500:700]  # nor do equal lengths
    res = length_bias(la, lb, outcome)
    expected_n = int(((outcome != 0.5) & (la != lb)).sum())
    assert res["n"] == expected_n
    assert res["longer_win_rate"] == pytest.approx(0.65, abs=0.025)
    assert res["p_value"] < 1e-6


# ---------------------------------------------------------------- planning helpers


def test_votes_needed_shrinks_with_the_gap() -> None:
    gaps = [5, 10, 25, 50, 100, 200, 400]
    needed = [votes_needed(1000 + g, 1000) for g in gaps]
    assert all(isinstance(k, int) and k >= 1 for k in needed)
    assert all(x > y for x, y in zip(needed, needed[1:], strict=False))
    assert votes_needed(1000, 1000) is None
    assert votes_needed(1100, 1000) == votes_needed(1000, 1100)
    # Odds 3:1 → p = 0.75: 1.96² · 0.1875 / 0.25² = 11.52 → 12 votes.
    assert votes_needed(1000 + 400 * math.log10(3), 1000) == 12
    assert votes_needed(float("nan"), 1000) is None


def _check_distribution(weights: dict[tuple[int, int], float], m: int) -> None:
    assert len(weights) == m * (m - 1) // 2
    assert all(i != j for i, j in weights)
    values = np.array(list(weights.values()))
    assert np.all(np.isfinite(values)) and np.all(values > 0)
    assert values.sum() == pytest.approx(1.0)


@pytest.mark.parametrize("m", [2, 3, 20])
def test_sampling_weights_without_data(m: int) -> None:
    weights = sampling_weights(m, {})
    _check_distribution(weights, m)
    assert max(weights.values()) == pytest.approx(min(weights.values()))  # nothing to prefer
    _check_distribution(sampling_weights([f"n{k}" for k in range(m)], None), m)


def test_sampling_weights_favour_thin_pairs_and_wide_intervals() -> None:
    weights = sampling_weights(["x", "y", "z"], {(0, 1): 100, (2, 0): 4})
    _check_distribution(weights, 3)
    assert weights[(1, 2)] > weights[(0, 2)] > weights[(0, 1)]

    wide = sampling_weights(3, {}, interval_widths=[10.0, 10.0, 80.0])
    assert wide[(0, 2)] > wide[(0, 1)] and wide[(1, 2)] > wide[(0, 1)]

    # Unknown widths (no votes) count as the widest; zero widths still leave positive weight.
    _check_distribution(sampling_weights(3, {}, interval_widths=[float("nan"), 5.0, 5.0]), 3)
    _check_distribution(sampling_weights(3, {}, interval_widths=[0.0, 0.0, 0.0]), 3)


def test_sampling_weights_accept_count_matrix(six: VoteTable) -> None:
    counts = battle_count_matrix(six)
    counts.iloc[0, 1] = counts.iloc[1, 0] = 0  # a pair that never met
    weights = sampling_weights(six.names, counts.to_numpy())
    _check_distribution(weights, 6)
    assert weights[(0, 1)] == max(weights.values())


@pytest.mark.parametrize("arg", [0, 1, ["solo"], []])
def test_sampling_weights_need_two_models(arg: int | list[str]) -> None:
    with pytest.raises(ValueError, match="at least 2 models"):
        sampling_weights(arg, {})


# ---------------------------------------------------------------- building tables


RECORDS = [
    {"a": "alpha", "b": "beta", "choice": "a", "prompt": "p1"},
    {"a": "beta", "b": "alpha", "choice": "both_bad", "prompt": "p1"},
    {"a": "gamma", "b": "alpha", "choice": "tie", "prompt": "p2"},
    {"a": "beta", "b": "gamma", "choice": "b", "prompt": "p3"},
]


def test_from_records_both_bad_as_tie() -> None:
    t = VoteTable.from_records(RECORDS, both_bad="tie")
    assert t.names == ["alpha", "beta", "gamma"]
    assert t.model_a.tolist() == [0, 1, 2, 1]
    assert t.model_b.tolist() == [1, 0, 0, 2]
    assert t.outcome.tolist() == [1.0, 0.5, 0.5, 0.0]
    assert t.prompt_id[0] == t.prompt_id[1] != t.prompt_id[2] != t.prompt_id[3]


def test_from_records_both_bad_dropped() -> None:
    t = VoteTable.from_records(RECORDS, both_bad="drop")
    assert len(t) == 3
    assert t.outcome.tolist() == [1.0, 0.5, 0.0]
    assert t.names == ["alpha", "beta", "gamma"]


def test_from_records_fixed_names_and_errors() -> None:
    t = VoteTable.from_records(RECORDS[:1], names=["zeta", "beta", "alpha"])
    assert t.model_a.tolist() == [2] and t.model_b.tolist() == [1] and t.n_models == 3
    with pytest.raises(ValueError, match="not in names"):
        VoteTable.from_records(RECORDS, names=["alpha", "beta"])
    with pytest.raises(ValueError, match="choice"):
        VoteTable.from_records([{"a": "x", "b": "y", "choice": "left", "prompt": "p"}])
    with pytest.raises(ValueError, match="both_bad"):
        VoteTable.from_records(RECORDS, both_bad="skip")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="two different models"):
        VoteTable.from_records([{"a": "x", "b": "x", "choice": "a", "prompt": "p"}])


def test_vote_table_validates_shapes_and_indices() -> None:
    with pytest.raises(ValueError, match="same length"):
        VoteTable([0, 1], [1], [1.0, 0.0], [0, 1], ["x", "y"])
    with pytest.raises(ValueError, match="indices"):
        VoteTable([0], [2], [1.0], [0], ["x", "y"])
    with pytest.raises(ValueError, match="outcome"):
        VoteTable([0], [1], [2.0], [0], ["x", "y"])
