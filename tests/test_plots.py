"""The figures the tabs draw: legends, whole-number step axes, readable model names."""

from __future__ import annotations

import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg

from tabs.plots import curve_figure, heatmap, short_name


def test_training_curves_have_a_legend_and_whole_steps():
    points = [{"step": s, "value": 2.0 / s, "series": "loss"} for s in (1, 2, 3)]
    points.append({"step": 3, "value": 0.9, "series": "eval_loss"})
    fig = curve_figure(points)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["training loss", "validation loss"]
    fig.canvas.draw()
    ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
    assert ticks and all(float(t).is_integer() for t in ticks)  # 3 steps: never 1.5, 2.5
    assert ax.get_xlabel() == "step"


def test_long_model_names_keep_both_ends():
    assert short_name("starter") == "starter"
    name = "starter-sft-dpo-round-2-from-votes-v3"
    short = short_name(name)
    assert len(short) == 22 and "…" in short
    assert short.startswith("starter-sf") and short.endswith("-votes-v3")


def test_heatmap_labels_are_names_and_cells_are_rounded():
    names = ["starter", "starter-sft-dpo-round-2-from-votes-v3"]
    frame = pd.DataFrame([[None, 0.6667], [0.3333, None]], index=names, columns=names)
    fig = heatmap(frame, "Win rate (row vs column)", ".0%")
    ax = fig.axes[0]
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    assert [t.get_text() for t in ax.get_yticklabels()] == [names[0], short_name(names[1])]
    assert sorted(t.get_text() for t in ax.texts) == ["33%", "67%"]
    # The labels fit inside the figure (none cut at the edge).
    renderer = canvas.get_renderer()
    for label in ax.get_yticklabels():
        assert label.get_window_extent(renderer).x0 >= 0
