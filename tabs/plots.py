"""Matplotlib figures the tabs show: training curves and the leaderboard's heatmaps. Drawn
here rather than with Gradio's Vega plots because those cannot be told that a step axis
is whole numbers. Matplotlib and pandas are imported on first use: the app starts without
them."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd

# What the run's logged keys mean, in the legend.
SERIES_NAMES = {"loss": "training loss", "eval_loss": "validation loss", "accuracy": "reward accuracy"}
NAME_LIMIT = 22


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def short_name(name: str, limit: int = NAME_LIMIT) -> str:
    """A model name that fits an axis: whole when short, else both ends around an ellipsis
    (versions of one model differ at the end, so the end is kept)."""
    if len(name) <= limit:
        return name
    head = (limit - 1) // 2
    return f"{name[:head]}…{name[-(limit - 1 - head):]}"


def curve_figure(points: Iterable[Mapping]):
    """Training curves: one line per logged series against whole-number steps, with a legend."""
    from matplotlib.ticker import MaxNLocator

    plt = _pyplot()
    series: dict[str, tuple[list[int], list[float]]] = {}
    for p in points:
        xs, ys = series.setdefault(str(p["series"]), ([], []))
        xs.append(int(p["step"]))
        ys.append(float(p["value"]))
    fig, ax = plt.subplots(figsize=(8, 3))
    for key, (xs, ys) in series.items():
        ax.plot(xs, ys, marker="o" if len(xs) <= 30 else None, markersize=3,
                label=SERIES_NAMES.get(key, key.replace("_", " ")))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("step")
    ax.grid(alpha=0.3)
    if series:
        ax.legend(fontsize="small", loc="best")
    fig.tight_layout()
    plt.close(fig)
    return fig


def heatmap(frame: pd.DataFrame, title: str, fmt: str):
    """A model-by-model matrix with each cell's value written in; names shortened to fit."""
    import pandas as pd

    plt = _pyplot()
    n = max(len(frame), 1)
    rows: Sequence[str] = [short_name(str(x)) for x in frame.index]
    cols: Sequence[str] = [short_name(str(x)) for x in frame.columns]
    longest = max((len(x) for x in [*rows, *cols]), default=4)
    label_room = 0.4 + 0.075 * longest  # inches the tick labels need
    fig, ax = plt.subplots(figsize=(label_room + 1.0 + 0.9 * n, label_room + 0.6 + 0.7 * n))
    values = frame.to_numpy(dtype=float) if len(frame) else [[float("nan")]]
    im = ax.imshow(values, cmap="RdYlGn" if "win" in title.lower() else "Blues")
    ax.set_xticks(range(len(cols)), cols, rotation=45, ha="right")
    ax.set_yticks(range(len(rows)), rows)
    for i in range(len(frame.index)):
        for j in range(len(frame.columns)):
            v = frame.iat[i, j]
            if pd.notna(v):
                ax.text(j, i, format(v, fmt), ha="center", va="center", fontsize=8)
    ax.set_title(title)
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    plt.close(fig)
    return fig
