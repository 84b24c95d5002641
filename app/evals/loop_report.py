"""The loop report: a lineage round by round, to show the loop working (or not).

A round is one parent → child step of a version's lineage: what the child learned from (the
run's recipe and datasets; for a vote dataset, how many votes by how many voters), each
suite's latest pass rate of parent and child with intervals, the child's pairwise win rate
against the parent when one was judged, the arena rating change and the gate. Exported as
Markdown with the pass-rate plot as a PNG beside it, zipped.
"""

from __future__ import annotations

import io
import zipfile
from typing import TYPE_CHECKING, Any

from app.arena.leaderboard import leaderboard_cache
from app.core.tables import ModelVersion
from app.evals.scores import latest_scores_in
from app.models.version_record import chain, step_facts

if TYPE_CHECKING:
    from pathlib import Path

    from app.core.workbench import Workbench

PLOT_NAME = "pass-rates.png"


def _ratings(wb: Workbench) -> dict[str, dict[str, float]]:
    table = leaderboard_cache(wb).get().table
    return {r.model: {"rating": float(r.rating), "lower": float(r.lower), "upper": float(r.upper),
                      "votes": int(r.votes)} for r in table.itertuples() if int(r.votes) > 0}


def _checks_scores(found: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per suite name, the checks-mode score (else a pairwise run's pass rate)."""
    out: dict[str, dict[str, Any]] = {}
    for x in found:
        if x["rate"] is not None and (x["suite"] not in out or x["mode"] == "checks"):
            out[x["suite"]] = x
    return out


def _slim(score: dict[str, Any] | None) -> dict[str, Any] | None:
    if score is None:
        return None
    return {k: score[k] for k in ("rate", "low", "high", "n", "suite_version", "run_id")}


def loop_report(wb: Workbench, model_id: int) -> dict[str, Any]:
    """``model_id``'s lineage from its base, a row per round (see the module's docstring)."""
    wb.row(ModelVersion, model_id, "model")
    with wb.session() as s:
        versions = list(reversed(chain(s, s.get(ModelVersion, model_id))))
        steps = {v.id: step_facts(s, v) for v in versions}
        found = latest_scores_in(s, [v.id for v in versions])
    ratings = _ratings(wb)
    scores = {v.id: _checks_scores(found[v.id]) for v in versions}
    suites = sorted({name for per in scores.values() for name in per})
    rounds = []
    for parent, child in zip(versions, versions[1:], strict=False):
        step = steps[child.id]
        run = step.get("run")
        pairwise = next((x for x in found[child.id] if x["mode"] == "pairwise"
                         and x.get("baseline_id") == parent.id and x.get("win_rate") is not None), None)
        before, after = ratings.get(parent.name), ratings.get(child.name)
        rounds.append({
            "parent": {"id": parent.id, "name": parent.name}, "child": {"id": child.id, "name": child.name},
            "run": {k: run[k] for k in ("id", "name", "stage", "recipe", "status")} if run else None,
            "how": f"{run['stage']} run {run['name']}" if run else f"{child.kind} copy (no training)",
            "datasets": [{k: d.get(k) for k in ("id", "name", "kind", "rows", "votes", "voters") if k in d}
                         for d in step.get("datasets", [])],
            "scores": {name: {"parent": _slim(scores[parent.id].get(name)),
                              "child": _slim(scores[child.id].get(name)),
                              "same_version": (name in scores[parent.id] and name in scores[child.id]
                                               and scores[parent.id][name]["suite_version"]
                                               == scores[child.id][name]["suite_version"])}
                       for name in suites},
            "pairwise": None if pairwise is None else {
                "suite": pairwise["suite"], "rate": pairwise["win_rate"], "low": pairwise["win_low"],
                "high": pairwise["win_high"], "run_id": pairwise["run_id"]},
            "rating": {"parent": before, "child": after,
                       "change": after["rating"] - before["rating"] if before and after else None},
            "gate": ((child.meta or {}).get("gate") or {}).get("status"),
        })
    return {"model_id": model_id, "lineage": [{"id": v.id, "name": v.name, "kind": v.kind} for v in versions],
            "suites": suites, "rounds": rounds,
            "series": {name: [{"model": v.name, **(_slim(scores[v.id].get(name)) or {"rate": None})}
                              for v in versions] for name in suites}}


def _rate(x: dict[str, Any] | None) -> str:
    if not x or x.get("rate") is None:
        return "—"
    return f"{x['rate']:.2f} [{x['low']:.2f}, {x['high']:.2f}]"


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _data_text(datasets: list[dict[str, Any]]) -> str:
    parts = []
    for d in datasets:
        votes = f", {d['votes']} votes by {d['voters']} voters" if "votes" in d else ""
        parts.append(f"{d['name']} ({d['kind']}, {d['rows']} rows{votes})")
    return "; ".join(parts) or "—"


def report_markdown(report: dict[str, Any], plot_name: str | None = PLOT_NAME) -> str:
    """The report as Markdown: the lineage, a table of rounds, and the plot (by file name)."""
    lines = [f"# Loop report: {report['lineage'][-1]['name']}", "",
             "Lineage: " + " → ".join(f"**{_cell(v['name'])}**" for v in report["lineage"]), ""]
    if not report["rounds"]:
        return "\n".join(lines + ["This version has no parent: there is no round to report yet."])
    heads = ["round", "parent → child", "how", "trained on",
             *[f"{_cell(s)}: parent → child" for s in report["suites"]], "win rate vs parent", "arena rating",
             "gate"]
    lines += ["| " + " | ".join(heads) + " |", "|" + "---|" * len(heads)]
    for i, r in enumerate(report["rounds"], 1):
        suite_cells = []
        for name in report["suites"]:
            sc = r["scores"][name]
            differ = sc["parent"] and sc["child"] and not sc["same_version"]
            suite_cells.append(f"{_rate(sc['parent'])} → {_rate(sc['child'])}"
                               + (" (different suite versions)" if differ else ""))
        rating = r["rating"]
        change = " (parent unrated)" if rating["change"] is None else f" ({rating['change']:+.0f})"
        rating_text = f"{rating['child']['rating']:.0f}{change}" if rating["child"] else "—"
        cells = [str(i), f"{r['parent']['name']} → {r['child']['name']}", r["how"], _data_text(r["datasets"]),
                 *suite_cells, _rate(r["pairwise"]), rating_text, r["gate"] or "—"]
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    if plot_name and report["suites"]:
        lines += ["", f"![Pass rate over the lineage]({plot_name})"]
    lines += ["", "Pass rates are each version's latest run of the suite, with 95% Wilson intervals; a win "
              "rate counts ties as half."]
    return "\n".join(lines)


def plot_png(report: dict[str, Any]) -> bytes | None:
    """Pass rate per suite along the lineage, with interval bars; None without scores."""
    if not report["suites"]:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [v["name"] for v in report["lineage"]]
    fig, ax = plt.subplots(figsize=(max(4.0, 1.4 * len(names)), 3.2))
    for offset, (suite, points) in enumerate(report["series"].items()):
        xs = [i + 0.06 * offset for i, p in enumerate(points) if p["rate"] is not None]
        ys = [p["rate"] for p in points if p["rate"] is not None]
        # max(0, …): at a rate of 0 or 1 rounding can put the bound a hair past the rate.
        err = [[max(0.0, p["rate"] - p["low"]) for p in points if p["rate"] is not None],
               [max(0.0, p["high"] - p["rate"]) for p in points if p["rate"] is not None]]
        ax.errorbar(xs, ys, yerr=err, marker="o", capsize=3, label=suite)
    ax.set_xticks(range(len(names)), names, rotation=20, ha="right")
    ax.set_ylim(0, 1.02)
    ax.set_ylabel("pass rate")
    ax.legend(fontsize="small")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def export_loop_report(wb: Workbench, model_id: int) -> Path:
    """A zip holding ``report.md`` and, when there are scores, the plot it shows."""
    report = loop_report(wb, model_id)
    png = plot_png(report)
    folder = wb.settings.jobs_dir / "loop-reports"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"loop-report-{model_id}.zip"
    tmp = path.with_suffix(".tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("report.md", report_markdown(report, PLOT_NAME if png else None))
        if png:
            z.writestr(PLOT_NAME, png)
    tmp.replace(path)
    return path
