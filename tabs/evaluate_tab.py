"""The Evaluate tab: make a suite (paste prompts, write checks), run it on one or two models,
follow the jobs, see the prompts × runs matrix coloured pass/fail, export it."""

from __future__ import annotations

import html

import gradio as gr

from app.core.workbench import Workbench
from app.evals import checks, results, runs, suites
from app.evals.suites import Sampling, SuiteRequest
from tabs.common import UserError, dataset_choices, follow_job, model_choices, progress_html, user_errors
from tabs.eval_gates import build_gates
from tabs.eval_heldout import SuiteForm, build_heldout
from tabs.eval_loop_report import build_loop_report
from tabs.eval_reference import build_reference

CHECK_HELP = ("One check a line, applied to every prompt: `contains: text`, `not_contains: text`, "
              "`regex: pattern`, `equals: text`, `valid_json`, `max_length: 200` (characters), "
              "`rubric: what a good answer does` (graded by the judge model, its rationale kept). "
              "`contains`/`not_contains` ignore case.")


def suite_choices(wb: Workbench) -> list[tuple[str, int]]:
    return [(f"{s.name} v{s.version} · {len(s.prompts)} prompts", s.id)
            for s in suites.list_suites(wb, latest_only=False)]


def _rate(r: dict | None) -> str:
    if not r or r.get("rate") is None:
        return "–"
    return f"{r['rate']:.0%} [{r['low']:.0%}, {r['high']:.0%}] (n={r['n']})"


def matrix_html(matrix: dict) -> str:
    """The comparison as a table: a row a prompt, a column a run, green pass / red fail."""
    head = "".join(
        f"<th>run {r['id']}: {html.escape(str(r['model']))}<br><small>{html.escape(str(r['suite']))} · "
        f"{r['status']} · pass {_rate(r['summary'].get('pass_rate'))}"
        + (f" · win {_rate(r['summary']['win_rate'])} vs {html.escape(str(r['baseline']))}"
           if r["summary"].get("win_rate") else "") + "</small></th>"
        for r in matrix["runs"])
    rows = []
    for row in matrix["rows"]:
        cells = []
        for cell in row["cells"]:
            if cell is None:
                cells.append("<td class='fl-eval-none'>—</td>")
                continue
            state = "pass" if cell["passed"] else "fail"
            colour = "#d6f5d6" if cell["passed"] else "#f8d4d4"
            extra = f" ({cell['passed_samples']}/{cell['samples']} samples)" if cell["samples"] > 1 else ""
            failed = [c["type"] for c in cell["checks"] if not c["passed"]]
            why = f"<br><small>failed: {html.escape(', '.join(failed))}</small>" if failed else ""
            cells.append(f"<td class='fl-eval-{state}' data-state='{state}' style='background:{colour}'>"
                         f"<b>{state.upper()}</b>{extra}<br>{html.escape(cell['answer'][:400])}{why}</td>")
        rows.append(f"<tr><td>{html.escape(row['prompt'][:300])}</td>{''.join(cells)}</tr>")
    if not matrix["rows"]:
        return "<p>No stored answers yet (a run that failed or was cancelled stores none).</p>"
    return f"<table class='fl-eval-matrix'><tr><th>prompt</th>{head}</tr>{''.join(rows)}</table>"


def _ids(text: str) -> list[int]:
    try:
        return [int(x) for x in str(text or "").replace(",", " ").split()]
    except ValueError:
        raise UserError("run ids are numbers, separated by commas or spaces") from None


def build(wb: Workbench) -> gr.Tab:
    with gr.Tab("Evaluate", id="evaluate") as tab:
        gr.Markdown("Run a suite of prompts with checks on a model version and see, prompt by prompt, "
                    "what passed. Pass rates come with a 95% Wilson interval.")
        with gr.Accordion("1 · Make a suite", open=True, elem_id="eval-suite-section"):
            with gr.Row():
                name = gr.Textbox(label="Suite name", placeholder="smoke-test")
                samples = gr.Number(label="Samples per prompt", value=1, precision=0, minimum=1)
                temperature = gr.Number(label="Temperature (0 = greedy)", value=0.0, minimum=0, maximum=2)
                max_tokens = gr.Number(label="Max new tokens", value=128, precision=0, minimum=1)
                seed = gr.Number(label="Seed (blank: random)", precision=0)
            prompts = gr.Textbox(label="Prompts (one a line, or blocks separated by a line with ---)",
                                 lines=6)
            dataset = gr.Dropdown(dataset_choices(wb),
                                  label="And/or the prompts of a dataset (optional)")
            check_text = gr.Textbox(label="Checks", lines=3, placeholder="contains: hello\nmax_length: 200")
            gr.Markdown(CHECK_HELP)
            save = gr.Button("Save suite (an existing name gets a new version)")
            suite_status = gr.Markdown()
        with gr.Accordion("2 · Run it", open=True, elem_id="eval-run-section"):
            with gr.Row():
                suite = gr.Dropdown(suite_choices(wb), label="Suite", elem_id="eval-suite")
                model_a = gr.Dropdown(model_choices(wb), label="Model to evaluate", elem_id="eval-model-a")
                model_b = gr.Dropdown(model_choices(wb), label="Second model (optional)",
                                      elem_id="eval-model-b")
                judge = gr.Dropdown(model_choices(wb), label="Judge model (rubric checks, pairwise)",
                                    elem_id="eval-judge")
            pairwise = gr.Checkbox(label="Also judge the second model against the first, in both orders "
                                         "(win rate: ties count half)")
            start = gr.Button("Run suite", variant="primary")
            progress = gr.HTML()
        with gr.Accordion("3 · Compare and export", open=True, elem_id="eval-compare-section"):
            with gr.Row():
                run_ids = gr.Textbox(label="Run ids (columns, in order)", placeholder="1, 2")
                compare = gr.Button("Show matrix")
                fmt = gr.Radio(["csv", "jsonl"], value="csv", label="Export format")
                export = gr.Button("Export")
            file = gr.File(label="Export", visible=False)
            matrix = gr.HTML(elem_id="eval-matrix")
        gate_model = build_gates(wb, suite)
        loop_model = build_loop_report(wb)
        ref_model, ref_data = build_reference(wb)
        split_data = build_heldout(wb, SuiteForm(name, check_text, samples, temperature, max_tokens, seed),
                                   suite_status, suite, lambda: suite_choices(wb))

        @user_errors
        def on_save(nm, text, check_lines, n, temp, tokens, dataset_id, seed_value=None):
            req = SuiteRequest((nm or "").strip(), suites.parse_prompts(text or ""),
                               checks.parse_checks(check_lines or ""),
                               Sampling(int(n or 1), float(temp or 0), int(tokens or 128),
                                        None if seed_value is None else int(seed_value)),
                               int(dataset_id) if dataset_id is not None else None)
            saved = suites.save_suite(wb, req)
            return (f"Saved **{saved.name} v{saved.version}**: {len(saved.prompts)} prompts, "
                    f"{len(saved.checks)} checks.", gr.update(choices=suite_choices(wb), value=saved.id))

        @user_errors
        def on_run(suite_id, a, b, judge_id, pair):
            if suite_id is None or a is None:
                raise UserError("choose a suite and a model first")
            if pair and (b is None or judge_id is None):  # refused before the first run starts
                raise UserError("judging pairwise needs a second model and a judge model")
            judge_id = int(judge_id) if judge_id is not None else None
            started = [runs.start_eval(wb, int(suite_id), int(a), judge_model_id=judge_id)]
            if b is not None:
                mode = "pairwise" if pair else "checks"
                started.append(runs.start_eval(wb, int(suite_id), int(b), mode=mode,
                                               baseline_id=int(a) if pair else None, judge_model_id=judge_id))
            ids = ", ".join(str(r.id) for r in started)
            for run in started:
                for view in follow_job(wb, run.job_id):
                    yield progress_html(view), gr.skip(), gr.skip()
                if view["status"] != "succeeded":
                    raise UserError(f"eval run {run.id} {view['status']}: {view['error']}")
            yield progress_html(view), ids, matrix_html(results.compare_runs(wb, [r.id for r in started]))

        @user_errors
        def on_compare(text):
            return matrix_html(results.compare_runs(wb, _ids(text)))

        @user_errors
        def on_export(text, f):
            return gr.update(value=str(results.export_file(wb, _ids(text), f)), visible=True)

        save.click(on_save, [name, prompts, check_text, samples, temperature, max_tokens, dataset, seed],
                   [suite_status, suite], api_name="save_eval_suite")
        start.click(on_run, [suite, model_a, model_b, judge, pairwise], [progress, run_ids, matrix],
                    api_name="run_eval_suite")
        compare.click(on_compare, run_ids, matrix, api_name="compare_eval_runs")
        export.click(on_export, [run_ids, fmt], file, api_name="export_eval_runs")

        def refresh():
            """Models and suites made elsewhere since the page loaded (on opening the tab, not on
            each picker's focus: a list re-rendered under the pointer loses the click)."""
            models = gr.update(choices=model_choices(wb))
            data = gr.update(choices=dataset_choices(wb))
            return (gr.update(choices=suite_choices(wb)), models, models, models, models, models, models,
                    data, gr.update(choices=dataset_choices(wb, "sft")), data)

        pickers = [suite, model_a, model_b, judge, gate_model, loop_model, ref_model, dataset, split_data,
                   ref_data]
        tab.select(refresh, None, pickers, show_api=False)
    return tab
