"""Data tab section: LLM-judge (or judge-less) preference pairs and the human annotation queue."""

from __future__ import annotations

import gradio as gr

from app.arena import annotation, judge
from app.core.workbench import Workbench
from app.inference.connection import check_connection
from app.inference.generation import GenSettings
from tabs.arena_tab import voter_id
from tabs.common import (
    SHORTCUT_HELP,
    UserError,
    connection_line,
    dataset_choices,
    follow_job,
    model_choices,
    progress_html,
    user_errors,
)

LABELS = [("A is better", "a"), ("B is better", "b"), ("Tie", "tie"), ("Both are bad", "both_bad")]
NO_JUDGE = 0  # the judge picker's "no judge" value (model ids start at 1)
# The arena's keys (tabs.common.SHORTCUT_KEYS): 1-4 pick the label and save it, N the next pair.
SHORTCUT_VIEW = {**{c: [f"#annotation-choice input[value='{c}']", "#annotation-save"] for _, c in LABELS},
                 "next": ["#annotation-next"]}


def judge_choices(wb: Workbench) -> list[tuple[str, int]]:
    return [("no judge (people label them)", NO_JUDGE), *model_choices(wb)]


def summary_message(summary: dict) -> str:
    if summary.get("unjudged"):
        return (f"**{summary['pairs']}** pairs answered without a judge: they wait in the "
                "annotation queue below for people to label them.")
    rate = summary.get("consistency_rate")
    return (f"**{summary['pairs']}** pairs judged: {summary['decisive']} preference pairs, "
            f"{summary['ties_dropped']} ties left out of DPO ({summary['inconsistent']} inconsistent "
            f"when the answers swapped, {summary['unparsed']} without a verdict). "
            f"Position consistency: {'–' if rate is None else f'{rate:.0%}'}.")


def agreement_message(view: dict) -> str:
    if not view["pairs"]:
        return f"No pair has both a judge and a human label yet ({view['judged']} judged)."
    return (f"Judge and people agree on **{view['agree']} of {view['pairs']}** pairs "
            f"({view['rate']:.0%}); {view['judged']} judged, {view['labelled']} labelled by people.")


def build(wb: Workbench) -> None:
    gr.Markdown("### LLM judge\nTwo answers per prompt (two models, or one model at two "
                "temperatures), judged twice with the answers swapped. Verdicts that survive the swap "
                "become preference pairs in the vote snapshots; the rest count as ties. With no judge, "
                "the pairs go to the annotation queue for people to label.")
    with gr.Row():
        model_a = gr.Dropdown(model_choices(wb), label="Answerer A")
        model_b = gr.Dropdown(model_choices(wb), label="Answerer B")
        judge_model = gr.Dropdown(judge_choices(wb), label="Judge model")
    with gr.Row():
        temp_a = gr.Slider(0, 2, value=0.7, step=0.05, label="Temperature A")
        temp_b = gr.Slider(0, 2, value=0.7, step=0.05, label="Temperature B")
        max_tokens = gr.Number(value=256, precision=0, label="Max new tokens")
    with gr.Row():
        prompts = gr.Textbox(label="Prompts (one a line)", lines=4)
        dataset = gr.Dropdown(dataset_choices(wb), label="…and/or a dataset's prompts", value=None)
    with gr.Row():
        start = gr.Button("Judge", variant="primary")
        check = gr.Button("Test the judge's connection")
    judge_status = gr.Markdown()
    judge_progress = gr.HTML()

    gr.Markdown("### Annotate\nLabel pairs yourself (judged ones, and those made without a judge), "
                "blind: the sides are shuffled.\n\n" + SHORTCUT_HELP.format(next="next pair"))
    battle_id = gr.Number(label="Pair", precision=0, interactive=False)
    question = gr.Textbox(label="Prompt", interactive=False)
    with gr.Row():
        answer_a = gr.Textbox(label="Answer A", interactive=False, lines=6)
        answer_b = gr.Textbox(label="Answer B", interactive=False, lines=6)
    with gr.Row():
        choice = gr.Radio(LABELS, label="Your label", value=None, elem_id="annotation-choice")
        next_btn = gr.Button("Next pair", elem_id="annotation-next")
        label_btn = gr.Button("Save label", variant="primary", elem_id="annotation-save")
        agree_btn = gr.Button("Judge/human agreement")
    annotate_status = gr.Markdown(elem_id="annotation-status")

    @user_errors
    def on_judge(a, b, j, ta, tb, n, text, ds):
        if a is None or b is None or j is None:
            raise UserError("choose answerers A and B and a judge model (or no judge)")
        items = [line for line in (text or "").splitlines() if line.strip()]
        if ds is not None:
            items += judge.dataset_prompts(wb, int(ds))
        gens = [GenSettings(t, max_new_tokens=int(n or 256)) for t in (ta, tb)]
        judge_id = None if int(j) == NO_JUDGE else int(j)
        job = judge.start_judge_job(wb, items, int(a), int(b), judge_id, *gens)
        doing = "judging" if judge_id else "answering"
        view = None
        for view in follow_job(wb, job.id):
            yield f"Job #{job.id} is {doing} {len(items)} prompts…", progress_html(view)
        done = wb.jobs.get(job.id)
        summary = (done.result or {}).get("summary")
        text = summary_message(summary) if summary else f"Job #{job.id} {done.status}: {done.error or ''}"
        yield text, progress_html(view)

    @user_errors
    def on_next(request: gr.Request):
        view = annotation.next_pair(wb, voter_id(request))
        pair = view["pair"]
        if pair is None:
            return None, "", "", "", "No pair is waiting for a label."
        return (pair["battle_id"], pair["prompt"], pair["answer_a"], pair["answer_b"],
                f"{view['remaining']} pairs waiting.")

    @user_errors
    def on_label(bid, label, request: gr.Request):
        if bid is None:
            raise UserError("take a pair first (Next pair)")
        if label is None:
            raise UserError("choose a label")
        out = annotation.label_pair(wb, int(bid), label, voter_id(request))
        note = " It overrules the judge's verdict." if out["overruled_judge"] else ""
        return f"Saved your label on pair {out['battle_id']}.{note}"

    @user_errors
    def on_check(judge_id):
        if not judge_id:  # None, or "no judge"
            raise UserError("choose a judge model first")
        return connection_line(check_connection(wb, int(judge_id)))

    @user_errors
    def on_agreement():
        return agreement_message(annotation.agreement(wb))

    start.click(on_judge, [model_a, model_b, judge_model, temp_a, temp_b, max_tokens, prompts, dataset],
                [judge_status, judge_progress], api_name="judge_pairs")
    # A new pair starts unlabelled: the label is cleared before the pair shows, so a key
    # pressed once it is on screen is never undone.
    next_btn.click(lambda: None, None, choice, show_api=False).then(
        on_next, None, [battle_id, question, answer_a, answer_b, annotate_status], api_name="annotation_next")
    label_btn.click(on_label, [battle_id, choice], annotate_status, api_name="annotation_label")
    agree_btn.click(on_agreement, None, annotate_status, api_name="annotation_agreement")
    check.click(on_check, judge_model, judge_status, api_name="check_judge")
    # Models and datasets registered since the page loaded.
    for picker in (model_a, model_b):
        picker.focus(lambda: gr.update(choices=model_choices(wb)), None, picker, show_api=False)
    judge_model.focus(lambda: gr.update(choices=judge_choices(wb)), None, judge_model, show_api=False)
    dataset.focus(lambda: gr.update(choices=dataset_choices(wb)), None, dataset, show_api=False)
