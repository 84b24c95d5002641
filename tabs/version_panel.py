"""The Registry's version detail and "compare two versions", as compact Markdown."""

from __future__ import annotations

from typing import Any

import gradio as gr

from app.arena.version_view import compare_versions, version_view
from app.core.workbench import Workbench
from app.evals.gates import gate_of
from app.evals.scores import latest_scores, score_text
from tabs.common import UserError, user_errors
from tabs.eval_gates import gate_markdown


def human_bytes(n: int | None) -> str:
    if n is None:
        return "—"
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"


def cell(value: Any) -> str:
    """A value that cannot break a Markdown table row."""
    if value is None or value == "":
        return "—"
    if isinstance(value, float):
        value = f"{value:.4g}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def rating_text(rating: dict[str, Any] | None) -> str:
    if not rating:
        return "no blind votes yet"
    lo, hi = rating["lower"], rating["upper"]
    spread = f" ± {(hi - lo) / 2:.0f} (95%: {lo:.0f}–{hi:.0f})" if lo is not None and hi is not None else ""
    return (f"{rating['rating']:.0f}{spread}, rank {rating['rank'] or '—'}, "
            f"{rating['votes']} votes in {rating['battles']} blind battles")


def dataset_text(ds: dict[str, Any]) -> str:
    votes = f", {ds['votes']} votes by {ds['voters']} voters" if "votes" in ds else ""
    return f"`{ds['name']}` ({ds['kind']}, {ds['rows']} rows{votes}, sha256 `{ds['sha256'][:12]}`)"


def view_markdown(v: dict[str, Any]) -> str:
    """One version: a facts table, then datasets, deployments and lineage."""
    run, recipe = v["run"], v["recipe"] or {}
    rows = [
        ("kind", v["kind"] + (" (archived)" if v["archived"] else "")),
        ("parent", f"{v['parent']['name']} (#{v['parent']['id']})" if v["parent"] else None),
        ("run", f"#{run['id']} {run['name']} · {run['stage']} · {run['status']}" if run else None),
        ("recipe", f"{recipe['name']} ({recipe['stage']}): " + ", ".join(
            f"{k} {val}" for k, val in recipe.items() if k not in ("name", "stage", "datasets"))
         if recipe else None),
        ("final loss", v["losses"]["final_loss"]),
        ("eval loss", v["losses"]["eval_loss"]),
        ("arena rating", rating_text(v["rating"])),
        ("arena record (all votes)", "{wins} W · {losses} L · {ties} T".format(**v["arena_record"])),
        ("size on disk", human_bytes(v["size"]["bytes"])),
        ("created", (v["created_at"] or "")[:19].replace("T", " ")),
        ("tags", ", ".join(v["tags"])),
        ("notes", v["notes"]),
    ]
    lines = [f"### {cell(v['name'])} (#{v['id']})", "", "| | |", "|---|---|"]
    lines += [f"| {k} | {cell(val)} |" for k, val in rows]
    if v["datasets"]:
        lines += ["", "**Datasets:** " + "; ".join(dataset_text(d) for d in v["datasets"])]
    if v["deployments"]:
        lines += ["", "**Deployments:**", "", "| target | name | status | url | created |",
                  "|---|---|---|---|---|"]
        lines += [f"| {d['target']} | {cell(d['name'])} | {d['status']} | {cell(d['url'])} | "
                  f"{(d['created_at'] or '')[:19].replace('T', ' ')} |" for d in v["deployments"]]
    else:
        lines += ["", "**Deployments:** none"]
    chain = []
    for step in v["lineage"]:
        line = f"- **{cell(step['name'])}** ({step['kind']})"
        if "run" in step:
            names = ", ".join(d["name"] for d in step["datasets"])
            line += f" ← run #{step['run']['id']} {step['run']['stage']} on {names}"
        chain.append(line)
    return "\n".join(lines + ["", "**Lineage:**", "", *chain])


def compare_markdown(c: dict[str, Any]) -> str:
    """Two versions: metrics side by side, the recipe diff and their head-to-head record."""
    a, b, h = c["a"], c["b"], c["head_to_head"]
    show = {"size_bytes": human_bytes, "rating": lambda x: "—" if x is None else f"{x:.0f}"}
    lines = [f"| | A: {cell(a['name'])} | B: {cell(b['name'])} |", "|---|---|---|",
             f"| kind | {a['kind']} | {b['kind']} |",
             f"| run | {cell(a['run'] and a['run']['name'])} | {cell(b['run'] and b['run']['name'])} |"]
    lines += [f"| {m['key']} | {show.get(m['key'], cell)(m['a'])} | {show.get(m['key'], cell)(m['b'])} |"
              for m in c["metrics"]]
    lines += [f"| rating interval | {rating_text(a['rating'])} | {rating_text(b['rating'])} |", ""]
    if c["recipe_diff"]:
        lines += ["**Recipe diff:**", "", "| key | A | B |", "|---|---|---|"]
        lines += [f"| {cell(d['key'])} | {cell(d['a'])} | {cell(d['b'])} |" for d in c["recipe_diff"]]
    else:
        lines.append("**Recipe diff:** none (the same training config, or neither was trained here)")
    which = "blind battles" if h["blind_only"] else "blind and named battles"
    left_out = sum(h["excluded"].values())
    lines += ["", f"**Head to head** ({which}): A won {h['a_wins']}, B won {h['b_wins']}, "
              f"{h['ties']} ties, {h['both_bad']} both bad, over {h['votes']} votes"
              + (f"; {left_out} votes left out ({', '.join(f'{k}: {n}' for k, n in h['excluded'].items())})."
                 if left_out else ".")]
    return "\n".join(lines)


def build_compare(wb: Workbench, choices: list[tuple[str, int]]) -> tuple[gr.Dropdown, gr.Dropdown]:
    """The "Compare two versions" accordion; returns its two pickers (the tab refreshes them)."""
    with gr.Accordion("Compare two versions", open=False):
        with gr.Row():
            first = gr.Dropdown(choices, label="Version A")
            second = gr.Dropdown(choices, label="Version B")
            named = gr.Checkbox(False, label="Count named battles too")
            go = gr.Button("Compare")
        out = gr.Markdown()

    @user_errors
    def on_compare(a_id, b_id, include_named):
        if a_id is None or b_id is None:
            raise UserError("choose two versions")
        return compare_markdown(compare_versions(wb, int(a_id), int(b_id), bool(include_named)))

    go.click(on_compare, [first, second, named], out, api_name="compare_versions")
    return first, second


def scores_markdown(found: list[dict[str, Any]]) -> str:
    if not found:
        return "**Eval scores:** none yet (run a suite in the Evaluate tab)"
    return "**Eval scores (latest per suite):**\n\n" + "\n".join(f"- {cell(score_text(x))}" for x in found)


def show_version(wb: Workbench, model_id: int | None) -> str:
    if not model_id:
        return ""
    model_id = int(model_id)
    parts = [view_markdown(version_view(wb, model_id)), scores_markdown(latest_scores(wb, model_id))]
    if gate := gate_of(wb, model_id):
        parts.append(gate_markdown(gate))
    return "\n\n".join(parts)
